ALTER TABLE "workflows" ADD COLUMN "retention_days" integer;--> statement-breakpoint
CREATE INDEX "workflows_own_retention_idx" ON "workflows" USING btree ("id") WHERE "workflows"."retention_days" is not null;--> statement-breakpoint
CREATE INDEX "executions_retry_of_idx" ON "executions" USING btree ("retry_of_id") WHERE "executions"."retry_of_id" is not null;--> statement-breakpoint
CREATE INDEX "executions_ended_finished_idx" ON "executions" USING btree ("finished_at","workflow_id","id") WHERE "executions"."status" in ('completed', 'failed', 'cancelled');--> statement-breakpoint
CREATE INDEX "executions_workflow_ended_finished_idx" ON "executions" USING btree ("workflow_id","finished_at") WHERE "executions"."status" in ('completed', 'failed', 'cancelled');--> statement-breakpoint
CREATE INDEX "webhook_deliveries_unexecuted_received_idx" ON "webhook_deliveries" USING btree ("received_at") WHERE "webhook_deliveries"."execution_id" is null;--> statement-breakpoint
ALTER TABLE "workflows" ADD CONSTRAINT "workflows_retention_days_range" CHECK ("workflows"."retention_days" between 1 and 3650);