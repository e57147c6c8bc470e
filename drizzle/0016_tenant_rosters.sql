CREATE TABLE "tenant_roster_versions" (
	"tenant" text PRIMARY KEY NOT NULL,
	"version" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tenant_rosters" (
	"tenant" text PRIMARY KEY NOT NULL,
	"built_version" bigint NOT NULL,
	"user_ids" text[] NOT NULL
);
--> statement-breakpoint
-- Written by hand: the triggers that bump a tenant's roster version whenever a user is added to or removed from
-- one of the three sources of a tenant broadcast's recipients (events/recipients.ts), or a device moves. Deferred
-- to the commit, so a transaction holds the version's row lock only while it commits: taken at its statement, the
-- lock was held through the rest of a device's registration, which then waited on another transaction's claims
-- while that one waited on the lock (a deadlock). Once per tenant and transaction: a version row this
-- transaction already wrote counts. Rows an upsert updated fire nothing, so a token seen again bumps nothing.
CREATE FUNCTION "bump_tenant_roster"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  changed text;
BEGIN
  FOREACH changed IN ARRAY CASE TG_OP
    WHEN 'INSERT' THEN ARRAY[NEW."tenant"]
    WHEN 'DELETE' THEN ARRAY[OLD."tenant"]
    ELSE ARRAY[OLD."tenant", NEW."tenant"] END
  LOOP
    IF NOT EXISTS (
      SELECT 1 FROM "tenant_roster_versions" v WHERE v."tenant" = changed AND v.xmin = pg_current_xact_id()::xid
    ) THEN
      INSERT INTO "tenant_roster_versions" ("tenant", "version") VALUES (changed, 1)
      ON CONFLICT ("tenant") DO UPDATE SET "version" = "tenant_roster_versions"."version" + 1;
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
-- A truncate leaves no rows to look at: every roster built is out of date.
CREATE FUNCTION "bump_every_tenant_roster"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "tenant_roster_versions" ("tenant", "version")
  SELECT "tenant", 1 FROM "tenant_rosters" ORDER BY "tenant"
  ON CONFLICT ("tenant") DO UPDATE SET "version" = "tenant_roster_versions"."version" + 1;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "directory_users_roster" AFTER INSERT OR DELETE ON "directory_users"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "directory_users_roster_truncate" AFTER TRUNCATE ON "directory_users"
  FOR EACH STATEMENT EXECUTE FUNCTION "bump_every_tenant_roster"();
--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "user_claims_roster" AFTER INSERT OR DELETE ON "user_claims"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "user_claims_roster_truncate" AFTER TRUNCATE ON "user_claims"
  FOR EACH STATEMENT EXECUTE FUNCTION "bump_every_tenant_roster"();
--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "push_subscriptions_roster" AFTER INSERT OR DELETE ON "push_subscriptions"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE CONSTRAINT TRIGGER "push_subscriptions_roster_move" AFTER UPDATE ON "push_subscriptions"
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN (OLD."tenant" IS DISTINCT FROM NEW."tenant" OR OLD."user_id" IS DISTINCT FROM NEW."user_id")
  EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "push_subscriptions_roster_truncate" AFTER TRUNCATE ON "push_subscriptions"
  FOR EACH STATEMENT EXECUTE FUNCTION "bump_every_tenant_roster"();
