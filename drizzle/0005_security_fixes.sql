-- drizzle-kit wrote the new primary key before the column it names; moved after it by hand.
CREATE TABLE "user_claims" (
	"tenant" text NOT NULL,
	"user_id" text NOT NULL,
	"roles" text[] DEFAULT '{}'::text[] NOT NULL,
	"topics" text[] DEFAULT '{}'::text[] NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "user_claims_tenant_user_id_pk" PRIMARY KEY("tenant","user_id")
);
--> statement-breakpoint
ALTER TABLE "idempotency_keys" DROP CONSTRAINT "idempotency_keys_tenant_key_pk";--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD COLUMN "actor" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD COLUMN "fingerprint" text;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_tenant_actor_key_pk" PRIMARY KEY("tenant","actor","key");--> statement-breakpoint
ALTER TABLE "push_subscriptions" ADD COLUMN "renew_token_expires_at" timestamp with time zone DEFAULT now() + interval '30 days' NOT NULL;--> statement-breakpoint
ALTER TABLE "push_subscriptions" DROP COLUMN "roles";--> statement-breakpoint
ALTER TABLE "push_subscriptions" DROP COLUMN "topics";