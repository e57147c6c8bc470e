CREATE TABLE "event_types" (
	"tenant" text NOT NULL,
	"type" text NOT NULL,
	"description" text,
	"category" text,
	"defaults" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"inbox" boolean DEFAULT true NOT NULL,
	"push" boolean DEFAULT true NOT NULL,
	"live_only" boolean DEFAULT false NOT NULL,
	"templates" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "event_types_tenant_type_pk" PRIMARY KEY("tenant","type")
);
--> statement-breakpoint
CREATE TABLE "live_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"payload" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "stream_connections" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"user_id" text NOT NULL,
	"instance_id" text NOT NULL,
	"opened_at" timestamp with time zone NOT NULL,
	"closed_at" timestamp with time zone,
	"close_reason" text,
	"user_agent" text,
	"client_ip" text
);
--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "localized_json" text;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "in_inbox" boolean DEFAULT true NOT NULL;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "may_push" boolean DEFAULT true NOT NULL;--> statement-breakpoint
CREATE INDEX "live_events_created_at_idx" ON "live_events" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "stream_connections_tenant_opened_idx" ON "stream_connections" USING btree ("tenant","opened_at");--> statement-breakpoint
CREATE INDEX "stream_connections_tenant_user_opened_idx" ON "stream_connections" USING btree ("tenant","user_id","opened_at");--> statement-breakpoint
CREATE INDEX "stream_connections_opened_idx" ON "stream_connections" USING btree ("opened_at");--> statement-breakpoint
CREATE INDEX "events_tenant_created_at_idx" ON "events" USING btree ("tenant","created_at");