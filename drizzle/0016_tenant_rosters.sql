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
-- one of the three sources of a tenant broadcast's recipients (events/recipients.ts). Statement-level, so a
-- batch of 5,000 users bumps once; an upsert's transition table holds only the rows it inserted, so a token seen
-- again or a directory entry updated bumps nothing. Tenants in order, so two writers never lock them crosswise.
CREATE FUNCTION "bump_tenant_roster"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "tenant_roster_versions" ("tenant", "version")
  SELECT DISTINCT "tenant", 1 FROM "changed" ORDER BY "tenant"
  ON CONFLICT ("tenant") DO UPDATE SET "version" = "tenant_roster_versions"."version" + 1;
  RETURN NULL;
END $$;
--> statement-breakpoint
-- A device that moves to another user (or tenant) changes both users' tenants.
CREATE FUNCTION "bump_tenant_roster_on_move"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "tenant_roster_versions" ("tenant", "version")
  SELECT DISTINCT "tenant", 1 FROM (
    SELECT o."tenant" FROM "old_rows" o JOIN "new_rows" n ON n."id" = o."id"
    WHERE (o."tenant", o."user_id") IS DISTINCT FROM (n."tenant", n."user_id")
    UNION ALL
    SELECT n."tenant" FROM "old_rows" o JOIN "new_rows" n ON n."id" = o."id"
    WHERE (o."tenant", o."user_id") IS DISTINCT FROM (n."tenant", n."user_id")
  ) moved ORDER BY "tenant"
  ON CONFLICT ("tenant") DO UPDATE SET "version" = "tenant_roster_versions"."version" + 1;
  RETURN NULL;
END $$;
--> statement-breakpoint
-- A truncate leaves no transition table: every roster built is out of date.
CREATE FUNCTION "bump_every_tenant_roster"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "tenant_roster_versions" ("tenant", "version")
  SELECT "tenant", 1 FROM "tenant_rosters" ORDER BY "tenant"
  ON CONFLICT ("tenant") DO UPDATE SET "version" = "tenant_roster_versions"."version" + 1;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "directory_users_roster_insert" AFTER INSERT ON "directory_users"
  REFERENCING NEW TABLE AS "changed" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "directory_users_roster_delete" AFTER DELETE ON "directory_users"
  REFERENCING OLD TABLE AS "changed" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "directory_users_roster_truncate" AFTER TRUNCATE ON "directory_users"
  FOR EACH STATEMENT EXECUTE FUNCTION "bump_every_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "user_claims_roster_insert" AFTER INSERT ON "user_claims"
  REFERENCING NEW TABLE AS "changed" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "user_claims_roster_delete" AFTER DELETE ON "user_claims"
  REFERENCING OLD TABLE AS "changed" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "user_claims_roster_truncate" AFTER TRUNCATE ON "user_claims"
  FOR EACH STATEMENT EXECUTE FUNCTION "bump_every_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "push_subscriptions_roster_insert" AFTER INSERT ON "push_subscriptions"
  REFERENCING NEW TABLE AS "changed" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "push_subscriptions_roster_delete" AFTER DELETE ON "push_subscriptions"
  REFERENCING OLD TABLE AS "changed" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster"();
--> statement-breakpoint
CREATE TRIGGER "push_subscriptions_roster_update" AFTER UPDATE ON "push_subscriptions"
  REFERENCING OLD TABLE AS "old_rows" NEW TABLE AS "new_rows" FOR EACH STATEMENT EXECUTE FUNCTION "bump_tenant_roster_on_move"();
--> statement-breakpoint
CREATE TRIGGER "push_subscriptions_roster_truncate" AFTER TRUNCATE ON "push_subscriptions"
  FOR EACH STATEMENT EXECUTE FUNCTION "bump_every_tenant_roster"();
