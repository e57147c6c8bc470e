// The user directory's limits, on their own: the CLI (directory/cli.ts) reads them without loading the server.

/** Operations in one batch (`POST /v1/directory/users/batch`): a school's whole roll in a few requests. */
export const MAX_BATCH_OPERATIONS = 5_000
