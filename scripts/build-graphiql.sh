#!/bin/sh
# Rebuild the GraphiQL page served at /graphql (src/polyport/web/static/graphiql/)
# from web-src/graphiql/: exact versions from package-lock.json, then esbuild.
# The built files are committed, so neither CI nor users need npm.
set -eu
cd "$(dirname "$0")/../web-src/graphiql"
npm ci --no-audit --no-fund
npm run build
