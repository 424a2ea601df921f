ALTER TABLE "user_usage" ADD COLUMN "connections" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "user_usage" ADD COLUMN "variables" integer DEFAULT 0 NOT NULL;