CREATE TABLE "preferences" (
	"tenant" text NOT NULL,
	"user_id" text NOT NULL,
	"settings" jsonb NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "preferences_tenant_user_id_pk" PRIMARY KEY("tenant","user_id")
);
--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "kind" text DEFAULT 'event' NOT NULL;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "ref_id" bigint;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "revision" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "recalled_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "events_ref_id_idx" ON "events" USING btree ("ref_id") WHERE ref_id is not null;