CREATE TABLE "scheduled_publishes" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"actor" text NOT NULL,
	"caller" text NOT NULL,
	"kind" text NOT NULL,
	"events" text NOT NULL,
	"deliver_at" timestamp with time zone NOT NULL,
	"state" text DEFAULT 'pending' NOT NULL,
	"event_ids" bigint[] DEFAULT '{}'::bigint[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"settled_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD COLUMN "scheduled_id" bigint;--> statement-breakpoint
CREATE INDEX "scheduled_publishes_due_idx" ON "scheduled_publishes" USING btree ("deliver_at") WHERE state = 'pending';--> statement-breakpoint
CREATE INDEX "scheduled_publishes_tenant_actor_idx" ON "scheduled_publishes" USING btree ("tenant","actor","id");