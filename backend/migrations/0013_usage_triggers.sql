-- user_usage is kept by these triggers, so every write and delete (cascades included) keeps it
-- exact without the code that writes knowing. Inserts are counted per statement, from transition
-- tables, one upsert per user in user order (statements touching the same users take the row
-- locks in the same order). An execution's own payload is counted as it changes, but only by
-- the writes that change it (the trigger's WHEN: heartbeats and revision bumps cost nothing);
-- its steps are counted once, when it ends, so no step write pays for accounting. Deletions are
-- counted row by row, BEFORE DELETE on executions taking its steps' share while they are there.
CREATE FUNCTION "usage_add"("owner" text, "workflows" int, "jobs" int, "executions" int, "steps" int, "payload_bytes" bigint) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO "user_usage" ("user_id", "workflows", "jobs", "executions", "steps", "payload_bytes")
  SELECT "owner", "workflows", "jobs", "executions", "steps", "payload_bytes"
   WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = "owner")
  ON CONFLICT ("user_id") DO UPDATE SET
    "workflows" = "user_usage"."workflows" + excluded."workflows",
    "jobs" = "user_usage"."jobs" + excluded."jobs",
    "executions" = "user_usage"."executions" + excluded."executions",
    "steps" = "user_usage"."steps" + excluded."steps",
    "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
$$;
--> statement-breakpoint
CREATE FUNCTION "usage_rows_inserted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'workflows' THEN
    PERFORM "usage_add"("user_id", n, 0, 0, 0, 0) FROM (SELECT "user_id", count(*)::int AS n FROM new_rows GROUP BY "user_id" ORDER BY "user_id") s;
  ELSIF TG_TABLE_NAME = 'jobs' THEN
    PERFORM "usage_add"("user_id", 0, n, 0, 0, 0) FROM (SELECT "user_id", count(*)::int AS n FROM new_rows GROUP BY "user_id" ORDER BY "user_id") s;
  ELSIF TG_TABLE_NAME = 'workflow_versions' THEN
    PERFORM "usage_add"("user_id", 0, 0, 0, 0, bytes) FROM (SELECT "user_id", sum("payload_bytes") AS bytes FROM new_rows GROUP BY "user_id" ORDER BY "user_id") s;
  ELSE -- executions
    PERFORM "usage_add"("user_id", 0, 0, n, 0, bytes)
       FROM (SELECT "user_id", count(*)::int AS n, sum("payload_bytes") AS bytes FROM new_rows GROUP BY "user_id" ORDER BY "user_id") s;
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION "usage_row_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'workflows' THEN
    PERFORM "usage_add"(OLD."user_id", -1, 0, 0, 0, 0);
  ELSIF TG_TABLE_NAME = 'jobs' THEN
    PERFORM "usage_add"(OLD."user_id", 0, -1, 0, 0, 0);
  ELSE -- workflow_versions
    PERFORM "usage_add"(OLD."user_id", 0, 0, 0, 0, -OLD."payload_bytes");
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION "usage_execution_changed"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  "step_count" int := 0;
  "step_bytes" bigint := 0;
BEGIN
  IF NEW."status" IN ('completed', 'failed', 'cancelled') AND OLD."status" NOT IN ('completed', 'failed', 'cancelled') THEN
    SELECT count(*)::int, coalesce(sum("payload_bytes"), 0) INTO "step_count", "step_bytes" FROM "execution_steps" WHERE "execution_id" = NEW."id";
  END IF;
  PERFORM "usage_add"(NEW."user_id", 0, 0, 0, "step_count", NEW."payload_bytes" - OLD."payload_bytes" + "step_bytes");
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION "usage_execution_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  "step_count" int := 0;
  "step_bytes" bigint := 0;
BEGIN
  -- Its steps were counted if it had ended.
  IF OLD."status" IN ('completed', 'failed', 'cancelled') THEN
    SELECT count(*)::int, coalesce(sum("payload_bytes"), 0) INTO "step_count", "step_bytes" FROM "execution_steps" WHERE "execution_id" = OLD."id";
  END IF;
  PERFORM "usage_add"(OLD."user_id", 0, 0, -1, -"step_count", -(OLD."payload_bytes" + "step_bytes"));
  RETURN OLD;
END $$;
--> statement-breakpoint
CREATE TRIGGER "usage_workflows_inserted" AFTER INSERT ON "workflows" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_inserted"();
--> statement-breakpoint
CREATE TRIGGER "usage_jobs_inserted" AFTER INSERT ON "jobs" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_inserted"();
--> statement-breakpoint
CREATE TRIGGER "usage_versions_inserted" AFTER INSERT ON "workflow_versions" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_inserted"();
--> statement-breakpoint
CREATE TRIGGER "usage_executions_inserted" AFTER INSERT ON "executions" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_inserted"();
--> statement-breakpoint
CREATE TRIGGER "usage_workflow_deleted" AFTER DELETE ON "workflows" FOR EACH ROW EXECUTE FUNCTION "usage_row_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_job_deleted" AFTER DELETE ON "jobs" FOR EACH ROW EXECUTE FUNCTION "usage_row_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_version_deleted" AFTER DELETE ON "workflow_versions" FOR EACH ROW EXECUTE FUNCTION "usage_row_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_execution_changed" AFTER UPDATE ON "executions" FOR EACH ROW
  WHEN (OLD."payload_bytes" <> NEW."payload_bytes"
        OR (NEW."status" IN ('completed', 'failed', 'cancelled') AND OLD."status" NOT IN ('completed', 'failed', 'cancelled')))
  EXECUTE FUNCTION "usage_execution_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_execution_deleted" BEFORE DELETE ON "executions" FOR EACH ROW EXECUTE FUNCTION "usage_execution_deleted"();
--> statement-breakpoint
-- What is already stored (the steps of executions that have ended).
INSERT INTO "user_usage" ("user_id", "workflows", "jobs", "executions", "steps", "payload_bytes")
SELECT u."id",
       (SELECT count(*) FROM "workflows" w WHERE w."user_id" = u."id"),
       (SELECT count(*) FROM "jobs" j WHERE j."user_id" = u."id"),
       (SELECT count(*) FROM "executions" e WHERE e."user_id" = u."id"),
       (SELECT count(*) FROM "execution_steps" s JOIN "executions" e ON e."id" = s."execution_id"
         WHERE e."user_id" = u."id" AND e."status" IN ('completed', 'failed', 'cancelled')),
       (SELECT coalesce(sum("payload_bytes"), 0) FROM "workflow_versions" v WHERE v."user_id" = u."id")
         + (SELECT coalesce(sum("payload_bytes"), 0) FROM "executions" e WHERE e."user_id" = u."id")
         + (SELECT coalesce(sum(s."payload_bytes"), 0) FROM "execution_steps" s JOIN "executions" e ON e."id" = s."execution_id"
             WHERE e."user_id" = u."id" AND e."status" IN ('completed', 'failed', 'cancelled'))
  FROM "user" u;
