ALTER TABLE "event_recipients" DROP CONSTRAINT "event_recipients_event_id_events_id_fk";
--> statement-breakpoint
ALTER TABLE "push_deliveries" DROP CONSTRAINT "push_deliveries_event_id_events_id_fk";
--> statement-breakpoint
ALTER TABLE "receipts" DROP CONSTRAINT "receipts_event_id_events_id_fk";
--> statement-breakpoint
ALTER TABLE "stream_deliveries" DROP CONSTRAINT "stream_deliveries_event_id_events_id_fk";
--> statement-breakpoint
-- Written by hand (drizzle-kit has no partitioned tables): events and the tables keyed by an event's id become
-- partitioned by event id, in blocks of 2^32 ids (src/events/log-blocks.ts). Each table as it was becomes block 0
-- of its new parent, which gets the same columns, keys and indexes under the same names (the existing indexes
-- are renamed and attached, not built again); block 1 and later are added by the service as ids reach them.
ALTER TABLE "events" RENAME TO "events_b0";
--> statement-breakpoint
ALTER INDEX "events_pkey" RENAME TO "events_b0_pkey";
--> statement-breakpoint
ALTER INDEX "events_tenant_id_idx" RENAME TO "events_b0_tenant_id_idx";
--> statement-breakpoint
ALTER INDEX "events_to_users_idx" RENAME TO "events_b0_to_users_idx";
--> statement-breakpoint
ALTER INDEX "events_expires_at_idx" RENAME TO "events_b0_expires_at_idx";
--> statement-breakpoint
ALTER INDEX "events_tenant_created_at_idx" RENAME TO "events_b0_tenant_created_at_idx";
--> statement-breakpoint
ALTER INDEX "events_ref_id_idx" RENAME TO "events_b0_ref_id_idx";
--> statement-breakpoint
CREATE TABLE "events" (LIKE "events_b0" INCLUDING DEFAULTS) PARTITION BY RANGE ("id");
--> statement-breakpoint
ALTER SEQUENCE "events_id_seq" OWNED BY "events"."id";
--> statement-breakpoint
ALTER TABLE "events" ADD CONSTRAINT "events_pkey" PRIMARY KEY("id");
--> statement-breakpoint
CREATE INDEX "events_tenant_id_idx" ON "events" USING btree ("tenant","id");
--> statement-breakpoint
CREATE INDEX "events_to_users_idx" ON "events" USING gin ("to_users") WITH (fastupdate=off);
--> statement-breakpoint
CREATE INDEX "events_expires_at_idx" ON "events" USING btree ("expires_at");
--> statement-breakpoint
CREATE INDEX "events_tenant_created_at_idx" ON "events" USING btree ("tenant","created_at");
--> statement-breakpoint
CREATE INDEX "events_ref_id_idx" ON "events" USING btree ("ref_id") WHERE ref_id is not null;
--> statement-breakpoint
ALTER TABLE "events" ATTACH PARTITION "events_b0" FOR VALUES FROM (MINVALUE) TO (4294967296);
--> statement-breakpoint
ALTER TABLE "receipts" RENAME TO "receipts_b0";
--> statement-breakpoint
ALTER INDEX "receipts_tenant_user_id_event_id_pk" RENAME TO "receipts_b0_tenant_user_id_event_id_pk";
--> statement-breakpoint
ALTER INDEX "receipts_event_id_idx" RENAME TO "receipts_b0_event_id_idx";
--> statement-breakpoint
CREATE TABLE "receipts" (LIKE "receipts_b0" INCLUDING DEFAULTS) PARTITION BY RANGE ("event_id");
--> statement-breakpoint
ALTER TABLE "receipts" ADD CONSTRAINT "receipts_tenant_user_id_event_id_pk" PRIMARY KEY("tenant","user_id","event_id");
--> statement-breakpoint
CREATE INDEX "receipts_event_id_idx" ON "receipts" USING btree ("event_id");
--> statement-breakpoint
ALTER TABLE "receipts" ATTACH PARTITION "receipts_b0" FOR VALUES FROM (MINVALUE) TO (4294967296);
--> statement-breakpoint
ALTER TABLE "event_recipients" RENAME TO "event_recipients_b0";
--> statement-breakpoint
ALTER INDEX "event_recipients_pkey" RENAME TO "event_recipients_b0_pkey";
--> statement-breakpoint
ALTER INDEX "event_recipients_escalate_due_idx" RENAME TO "event_recipients_b0_escalate_due_idx";
--> statement-breakpoint
CREATE TABLE "event_recipients" (LIKE "event_recipients_b0" INCLUDING DEFAULTS) PARTITION BY RANGE ("event_id");
--> statement-breakpoint
ALTER TABLE "event_recipients" ADD CONSTRAINT "event_recipients_pkey" PRIMARY KEY("event_id");
--> statement-breakpoint
CREATE INDEX "event_recipients_escalate_due_idx" ON "event_recipients" USING btree ("escalate_at") WHERE escalation = 'pending';
--> statement-breakpoint
ALTER TABLE "event_recipients" ATTACH PARTITION "event_recipients_b0" FOR VALUES FROM (MINVALUE) TO (4294967296);
--> statement-breakpoint
ALTER TABLE "stream_deliveries" RENAME TO "stream_deliveries_b0";
--> statement-breakpoint
ALTER INDEX "stream_deliveries_event_idx" RENAME TO "stream_deliveries_b0_event_idx";
--> statement-breakpoint
CREATE TABLE "stream_deliveries" (LIKE "stream_deliveries_b0" INCLUDING DEFAULTS) PARTITION BY RANGE ("event_id");
--> statement-breakpoint
CREATE INDEX "stream_deliveries_event_idx" ON "stream_deliveries" USING btree ("event_id");
--> statement-breakpoint
ALTER TABLE "stream_deliveries" ATTACH PARTITION "stream_deliveries_b0" FOR VALUES FROM (MINVALUE) TO (4294967296);
