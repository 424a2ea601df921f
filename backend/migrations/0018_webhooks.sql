CREATE TYPE "public"."webhook_delivery_status" AS ENUM('accepted', 'rejected', 'duplicate');--> statement-breakpoint
ALTER TYPE "public"."execution_trigger" ADD VALUE 'webhook';--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" text NOT NULL,
	"workflow_id" uuid NOT NULL,
	"status" "webhook_delivery_status" NOT NULL,
	"execution_id" uuid,
	"dedup_key" text,
	"method" text NOT NULL,
	"headers" jsonb NOT NULL,
	"query" jsonb NOT NULL,
	"content_type" text,
	"body" "bytea" NOT NULL,
	"body_bytes" integer NOT NULL,
	"reason" text,
	"received_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"payload_bytes" integer GENERATED ALWAYS AS (octet_length(body) + octet_length(headers::text) + octet_length(query::text)) STORED NOT NULL
);
--> statement-breakpoint
ALTER TABLE "workflows" ADD COLUMN "hook_id" text;--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_workflow_id_workflows_id_fk" FOREIGN KEY ("workflow_id") REFERENCES "public"."workflows"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_execution_id_executions_id_fk" FOREIGN KEY ("execution_id") REFERENCES "public"."executions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "webhook_deliveries_workflow_received_idx" ON "webhook_deliveries" USING btree ("workflow_id","received_at","id");--> statement-breakpoint
CREATE INDEX "webhook_deliveries_user_idx" ON "webhook_deliveries" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "webhook_deliveries_execution_idx" ON "webhook_deliveries" USING btree ("execution_id");--> statement-breakpoint
CREATE INDEX "webhook_deliveries_dedup_idx" ON "webhook_deliveries" USING btree ("workflow_id","dedup_key","received_at") WHERE "webhook_deliveries"."dedup_key" is not null and "webhook_deliveries"."status" = 'accepted';--> statement-breakpoint
ALTER TABLE "workflows" ADD CONSTRAINT "workflows_hook_id_unique" UNIQUE("hook_id");