ALTER TABLE "events" ADD COLUMN "actions_json" text;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "icon" text;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "image" text;--> statement-breakpoint
ALTER TABLE "events" ADD COLUMN "badge" text;