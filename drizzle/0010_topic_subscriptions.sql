CREATE TABLE "topic_subscriptions" (
	"tenant" text NOT NULL,
	"user_id" text NOT NULL,
	"topic" text NOT NULL,
	"added_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "topic_subscriptions_tenant_user_id_topic_pk" PRIMARY KEY("tenant","user_id","topic")
);
--> statement-breakpoint
CREATE INDEX "topic_subscriptions_topic_idx" ON "topic_subscriptions" USING btree ("tenant","topic");