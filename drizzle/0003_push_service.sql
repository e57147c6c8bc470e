ALTER TABLE "push_deliveries" ADD COLUMN "service" text;--> statement-breakpoint
-- Pushes planned before the column existed get their device's push service, so the claim shares them out too.
UPDATE "push_deliveries" d SET "service" = substring(s."endpoint" from '^[a-z]+://[^/?#]+')
FROM "push_subscriptions" s WHERE s."id" = d."subscription_id" AND d."state" = 'pending';
