// The dashboard's links to the demo pages, shown only where the node serves
// them: a page is served when the service declares the events it shows (the
// same rule as DEMO_PAGES in polyport/web/__init__.py).

const PAGES = [
  {id: "demo-orders-link", events: ["orders.created", "orders.updated"]},
  {id: "demo-chat-link", events: ["chat.message"]},
  {id: "demo-monitor-link", events: ["sensors.temperature", "sensors.humidity", "alerts.raised"]},
];

async function main() {
  let catalog;
  try {
    const response = await fetch("/catalog.json", {cache: "no-cache"});
    if (!response.ok) return;
    catalog = await response.json();
  } catch {
    return; // the dashboard itself reports an unreachable node
  }
  const declared = new Set(catalog.events.map((event) => event.name));
  for (const page of PAGES) {
    const link = document.getElementById(page.id);
    if (link) link.hidden = !page.events.every((name) => declared.has(name));
  }
}

main();
