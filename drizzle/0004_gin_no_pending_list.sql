-- Each insert updates the users index directly. With GIN's pending list (the default), an unlucky publish
-- flushed 4 MB of queued entries inside its own statement: 100+ ms stalls under steady publishing.
-- ALTER, not drizzle-kit's DROP and CREATE: instant, and no index build that blocks publishes on a large log.
ALTER INDEX "events_to_users_idx" SET (fastupdate = off);
