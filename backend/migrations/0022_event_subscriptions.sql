CREATE TYPE "public"."event_message_status" AS ENUM('pending', 'delivered', 'failed');--> statement-breakpoint
CREATE TABLE "event_attempts" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"message_id" uuid NOT NULL,
	"attempted_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"status_code" integer,
	"latency_ms" integer NOT NULL,
	"error" text,
	"response_head" text
);
--> statement-breakpoint
CREATE TABLE "event_messages" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"subscription_id" uuid NOT NULL,
	"user_id" text NOT NULL,
	"type" text NOT NULL,
	"webhook_id" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" "event_message_status" DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"locked_until" timestamp (3) with time zone,
	"last_status_code" integer,
	"last_error" text,
	"execution_id" uuid,
	"webhook_delivery_id" uuid,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp (3) with time zone,
	"payload_bytes" integer GENERATED ALWAYS AS (octet_length(payload::text) + coalesce(octet_length(last_error), 0)) STORED NOT NULL
);
--> statement-breakpoint
CREATE TABLE "event_subscriptions" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"url" text NOT NULL,
	"events" text[] NOT NULL,
	"workflow_id" uuid,
	"enabled" boolean DEFAULT true NOT NULL,
	"disabled_reason" text,
	"secret_key_id" text,
	"secret_ciphertext" text,
	"previous_secret_key_id" text,
	"previous_secret_ciphertext" text,
	"previous_secret_expires_at" timestamp (3) with time zone,
	"failing_since" timestamp (3) with time zone,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "user_usage" ADD COLUMN "event_deliveries" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "event_attempts" ADD CONSTRAINT "event_attempts_message_id_event_messages_id_fk" FOREIGN KEY ("message_id") REFERENCES "public"."event_messages"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "event_messages" ADD CONSTRAINT "event_messages_subscription_id_event_subscriptions_id_fk" FOREIGN KEY ("subscription_id") REFERENCES "public"."event_subscriptions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "event_messages" ADD CONSTRAINT "event_messages_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "event_messages" ADD CONSTRAINT "event_messages_execution_id_executions_id_fk" FOREIGN KEY ("execution_id") REFERENCES "public"."executions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "event_messages" ADD CONSTRAINT "event_messages_webhook_delivery_id_webhook_deliveries_id_fk" FOREIGN KEY ("webhook_delivery_id") REFERENCES "public"."webhook_deliveries"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "event_subscriptions" ADD CONSTRAINT "event_subscriptions_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "event_subscriptions" ADD CONSTRAINT "event_subscriptions_workflow_id_workflows_id_fk" FOREIGN KEY ("workflow_id") REFERENCES "public"."workflows"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "event_attempts_message_idx" ON "event_attempts" USING btree ("message_id","attempted_at");--> statement-breakpoint
CREATE INDEX "event_messages_due_idx" ON "event_messages" USING btree ("next_attempt_at") WHERE "event_messages"."status" = 'pending';--> statement-breakpoint
CREATE INDEX "event_messages_subscription_created_idx" ON "event_messages" USING btree ("subscription_id","created_at","id");--> statement-breakpoint
CREATE INDEX "event_messages_user_idx" ON "event_messages" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "event_messages_execution_idx" ON "event_messages" USING btree ("execution_id");--> statement-breakpoint
CREATE INDEX "event_messages_webhook_delivery_idx" ON "event_messages" USING btree ("webhook_delivery_id");--> statement-breakpoint
CREATE INDEX "event_subscriptions_user_created_idx" ON "event_subscriptions" USING btree ("user_id","created_at","id");--> statement-breakpoint
CREATE INDEX "event_subscriptions_user_updated_idx" ON "event_subscriptions" USING btree ("user_id","updated_at","id");--> statement-breakpoint
CREATE INDEX "event_subscriptions_workflow_idx" ON "event_subscriptions" USING btree ("workflow_id");--> statement-breakpoint
CREATE INDEX "event_subscriptions_user_enabled_idx" ON "event_subscriptions" USING btree ("user_id") WHERE "event_subscriptions"."enabled";--> statement-breakpoint
CREATE INDEX "event_subscriptions_secret_key_idx" ON "event_subscriptions" USING btree ("secret_key_id");--> statement-breakpoint
CREATE INDEX "event_subscriptions_previous_secret_key_idx" ON "event_subscriptions" USING btree ("previous_secret_key_id");