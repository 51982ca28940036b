// The /graphql page of a polyport node: GraphiQL on the node's own endpoint.
// Queries and mutations go over HTTP POST, subscriptions over graphql-transport-ws
// on the same path. Built by build.mjs into src/polyport/web/static/graphiql/.
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { GraphiQL } from "graphiql";
import "graphiql/style.css";
import React from "react";
import { createRoot } from "react-dom/client";

const endpoint = new URL("/graphql", window.location.href);
const socket = new URL(endpoint);
socket.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

const fetcher = createGraphiQLFetcher({
  url: endpoint.href,
  subscriptionUrl: socket.href,
});

const DEFAULT_QUERY = `# A profile, its posts and their comments, in one request
{
  user(id: 1) {
    name
    posts(limit: 5) {
      title
      comments(limit: 3) {
        author { name }
        text
      }
    }
  }
}
`;

createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: DEFAULT_QUERY,
    defaultEditorToolsVisibility: true,
  }),
);
