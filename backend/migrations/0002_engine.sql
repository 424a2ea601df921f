ALTER TABLE "executions" ADD COLUMN "retry_of_id" uuid;--> statement-breakpoint
ALTER TABLE "executions" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "executions" ADD COLUMN "lease_expires_at" timestamp (3) with time zone;--> statement-breakpoint
ALTER TABLE "executions" ADD COLUMN "wake_at" timestamp (3) with time zone;--> statement-breakpoint
ALTER TABLE "executions" ADD COLUMN "revision" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "executions" ADD CONSTRAINT "executions_retry_of_id_executions_id_fk" FOREIGN KEY ("retry_of_id") REFERENCES "public"."executions"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "executions_runnable_idx" ON "executions" USING btree ("wake_at") WHERE "executions"."status" in ('pending', 'paused');--> statement-breakpoint
CREATE INDEX "executions_lease_idx" ON "executions" USING btree ("lease_expires_at") WHERE "executions"."status" = 'running';