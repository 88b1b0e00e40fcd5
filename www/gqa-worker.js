// The module worker that runs the model for gqa.js, so that loading and generating
// never freeze the page. All the work is in gqa-host.js.

import { Host } from './gqa-host.js';

const host = new Host((message, transfer = []) => self.postMessage(message, transfer));

self.addEventListener('message', (event) => host.handle(event.data));

// Errors outside any request (none are expected) still reach the page's console.
self.addEventListener('unhandledrejection', (event) => {
  const reason = event.reason;
  self.postMessage({
    type: 'error',
    id: null,
    error: { name: reason?.name ?? 'Error', message: reason?.message ?? String(reason) },
  });
});
