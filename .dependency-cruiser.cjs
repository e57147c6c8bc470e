/**
 * The layering of src/, as rules `npm test` checks (dependency-cruiser): a change that breaks one fails the tests.
 * Data flows route → service → db, and db → tail → hub → socket:
 *   routes/      HTTP adapters: parse, call a service, answer. No database handle, no SQL.
 *   events/      the event log: publishing, inbox, receipts (EventService), the log tail and the replay reads.
 *   push/        Web Push: devices (PushService), the outbox plan and the dispatcher.
 *   stream/      sockets only: the hub of open streams and each stream's connection. No SQL.
 *   cluster/     what instances tell each other (presence, the bus).
 *   db/          the database: the bottom layer.
 *   wire-format.ts  every byte written to clients about events, JS and SQL builders side by side.
 * app.ts composes the subsystems (each a Fastify plugin); server.ts and cli.ts are the entry points.
 */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import circles make a module impossible to understand (or load) on its own.',
      from: {},
      to: { circular: true },
    },
    {
      name: 'routes-hold-no-database',
      severity: 'error',
      comment: 'Routes are HTTP adapters over services: the services own the queries.',
      from: { path: '^src/routes/' },
      to: { path: ['^src/db/', '^node_modules/(drizzle-orm|postgres|@electric-sql)/'] },
    },
    {
      name: 'only-the-stream-route-touches-streams',
      severity: 'error',
      comment: 'Sockets are the stream route’s business; other routes go through services.',
      from: { path: '^src/routes/', pathNot: '^src/routes/stream\\.ts$' },
      to: { path: '^src/stream/' },
    },
    {
      name: 'services-know-no-http',
      severity: 'error',
      comment:
        'Services throw service errors (service-errors.ts); problems.ts alone turns them into HTTP. They never reach up to routes or the app.',
      from: { path: '^src/(events|push|cluster|db|directory|webhooks|audit)/' },
      to: {
        path: '^src/(routes/|app\\.ts|server\\.ts|cli\\.ts|problems\\.ts|docs\\.ts|limits\\.ts|cors\\.ts|security-headers\\.ts)',
      },
    },
    {
      name: 'streams-run-no-sql',
      severity: 'error',
      comment: 'stream/ only handles sockets: the log’s reads are in events/log-reader.ts.',
      from: { path: '^src/stream/' },
      to: { path: ['^src/db/client\\.ts$', '^node_modules/(drizzle-orm|postgres|@electric-sql)/'] },
    },
    {
      name: 'the-log-feeds-streams-through-the-hub',
      severity: 'error',
      comment: 'db → tail → hub → socket: events/ hands rows to the hub it is given, it never imports stream/.',
      from: { path: '^src/events/' },
      to: { path: '^src/stream/' },
    },
    {
      name: 'publishing-does-not-know-push',
      severity: 'error',
      comment:
        'The push planner is injected into publishing (events/publish.ts PlanPushes): push/ depends on events/, not back.',
      from: { path: '^src/events/' },
      to: { path: '^src/push/' },
    },
    {
      name: 'the-database-is-the-bottom',
      severity: 'error',
      comment:
        'db/ depends on nothing above it (config for its options and errors, the shared error helpers, where the ' +
        'package keeps its migrations and entry files).',
      from: { path: '^src/db/' },
      to: { path: '^src/', pathNot: '^src/(db/|config\\.ts$|service-errors\\.ts$|package-files\\.ts$)' },
    },
    {
      name: 'the-wire-format-is-a-leaf',
      severity: 'error',
      comment: 'wire-format.ts is what clients see: it builds on the schema and nothing else.',
      from: { path: '^src/wire-format\\.ts$' },
      to: { path: '^src/', pathNot: '^src/db/schema\\.ts$' },
    },
    {
      name: 'the-client-loads-nothing-of-the-server',
      severity: 'error',
      comment: 'herald/client runs in application backends: the server’s modules are type-only imports there.',
      from: { path: '^src/client/' },
      to: { path: '^src/', pathNot: '^src/(client/|tokens\\.ts$)', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-tests-in-the-service',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
  },
}
