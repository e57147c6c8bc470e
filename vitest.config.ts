import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each file builds its own databases; a few at a time keeps two cores busy without starving streams.
    maxWorkers: 3,
    fileParallelism: true,
  },
})
