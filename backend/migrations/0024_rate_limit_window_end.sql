-- Edited after generation: drizzle-kit put the new primary key before the column it names, and the
-- column is NOT NULL with no value to give the rows present. Those rows are counts of the running
-- window only; deleting them resets each user's rate-limit count once, at this migration.
DELETE FROM "request_counts";--> statement-breakpoint
DROP INDEX "request_counts_window_start_idx";--> statement-breakpoint
ALTER TABLE "request_counts" DROP CONSTRAINT "request_counts_user_id_window_start_pk";--> statement-breakpoint
ALTER TABLE "request_counts" ADD COLUMN "window_end" timestamp (3) with time zone NOT NULL;--> statement-breakpoint
ALTER TABLE "request_counts" ADD CONSTRAINT "request_counts_user_id_window_start_window_end_pk" PRIMARY KEY("user_id","window_start","window_end");--> statement-breakpoint
CREATE INDEX "request_counts_window_end_idx" ON "request_counts" USING btree ("window_end");
