CREATE TABLE "events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"type" text NOT NULL,
	"title" text NOT NULL,
	"body" text,
	"data_json" text,
	"priority" text NOT NULL,
	"url" text,
	"collapse_key" text,
	"actor" text NOT NULL,
	"to_users" text[] DEFAULT '{}'::text[] NOT NULL,
	"to_roles" text[] DEFAULT '{}'::text[] NOT NULL,
	"to_topics" text[] DEFAULT '{}'::text[] NOT NULL,
	"to_tenant" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "idempotency_keys" (
	"tenant" text NOT NULL,
	"key" text NOT NULL,
	"kind" text NOT NULL,
	"event_ids" bigint[] DEFAULT '{}'::bigint[] NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "idempotency_keys_tenant_key_pk" PRIMARY KEY("tenant","key")
);
--> statement-breakpoint
CREATE TABLE "receipts" (
	"tenant" text NOT NULL,
	"user_id" text NOT NULL,
	"event_id" bigint NOT NULL,
	"acked_at" timestamp with time zone,
	"read_at" timestamp with time zone,
	CONSTRAINT "receipts_tenant_user_id_event_id_pk" PRIMARY KEY("tenant","user_id","event_id")
);
--> statement-breakpoint
ALTER TABLE "receipts" ADD CONSTRAINT "receipts_event_id_events_id_fk" FOREIGN KEY ("event_id") REFERENCES "public"."events"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "events_tenant_id_idx" ON "events" USING btree ("tenant","id");--> statement-breakpoint
CREATE INDEX "events_to_users_idx" ON "events" USING gin ("to_users");--> statement-breakpoint
CREATE INDEX "events_expires_at_idx" ON "events" USING btree ("expires_at");--> statement-breakpoint
CREATE INDEX "idempotency_keys_created_at_idx" ON "idempotency_keys" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "receipts_event_id_idx" ON "receipts" USING btree ("event_id");