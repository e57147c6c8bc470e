#!/usr/bin/env node
// The compiled CLI (npm install builds dist/); `npm run dev` and the tests run the TypeScript sources with tsx.
await import('../dist/cli.js')
