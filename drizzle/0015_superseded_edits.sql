ALTER TABLE "events" ADD COLUMN "superseded" boolean DEFAULT false NOT NULL;--> statement-breakpoint
-- Edits already superseded by a later edit, or whose event was recalled (written by hand).
UPDATE "events" AS u SET "superseded" = true
WHERE u."kind" = 'update' AND NOT EXISTS (
  SELECT 1 FROM "events" AS edited
  WHERE edited."id" = u."ref_id" AND edited."revision" = u."revision" AND edited."recalled_at" IS NULL);
