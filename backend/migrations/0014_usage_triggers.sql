-- user_usage is kept by these triggers, so every write and delete (cascades included) keeps it
-- exact without the code that writes knowing. Each statement's rows are added per user in one
-- upsert, in user order, from transition tables: a statement touches the usage row of a user once,
-- at its end, so it never holds that row while waiting for another (no deadlock with a worker
-- ending a run while a workflow is deleted). Steps are counted as they are written (a retry's
-- copied steps too), and each execution keeps its steps' totals (step_count, step_payload_bytes),
-- so deleting it takes them away with its own row. An execution's own update fires its trigger
-- only when its payload changes (heartbeats and revision bumps cost nothing).
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
CREATE FUNCTION "usage_rows_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'workflows' THEN
    PERFORM "usage_add"("user_id", -n, 0, 0, 0, 0) FROM (SELECT "user_id", count(*)::int AS n FROM old_rows GROUP BY "user_id" ORDER BY "user_id") s;
  ELSIF TG_TABLE_NAME = 'jobs' THEN
    PERFORM "usage_add"("user_id", 0, -n, 0, 0, 0) FROM (SELECT "user_id", count(*)::int AS n FROM old_rows GROUP BY "user_id" ORDER BY "user_id") s;
  ELSIF TG_TABLE_NAME = 'workflow_versions' THEN
    PERFORM "usage_add"("user_id", 0, 0, 0, 0, -bytes) FROM (SELECT "user_id", sum("payload_bytes") AS bytes FROM old_rows GROUP BY "user_id" ORDER BY "user_id") s;
  ELSE -- executions, with their steps' totals
    PERFORM "usage_add"("user_id", 0, 0, -n, -steps, -bytes)
       FROM (SELECT "user_id", count(*)::int AS n, sum("step_count")::int AS steps, sum("payload_bytes" + "step_payload_bytes")::bigint AS bytes
               FROM old_rows GROUP BY "user_id" ORDER BY "user_id") s;
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION "usage_execution_changed"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM "usage_add"(NEW."user_id", 0, 0, 0, 0, NEW."payload_bytes" - OLD."payload_bytes");
  RETURN NULL;
END $$;
--> statement-breakpoint
-- Steps written by one statement (an INSERT, or the UPDATE half of an INSERT ... ON CONFLICT):
-- their execution's totals, then their user's usage. Steps are deleted only with their execution.
CREATE FUNCTION "usage_steps_inserted"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    WITH per_execution AS (
      SELECT "execution_id", count(*)::int AS steps, sum("payload_bytes")::bigint AS bytes FROM new_rows GROUP BY "execution_id"
    ), totals AS (
      UPDATE "executions" e SET "step_count" = e."step_count" + p.steps, "step_payload_bytes" = e."step_payload_bytes" + p.bytes
        FROM per_execution p WHERE e."id" = p."execution_id"
      RETURNING e."user_id", p.steps, p.bytes
    )
    SELECT "user_id", sum(steps)::int AS steps, sum(bytes)::bigint AS bytes FROM totals GROUP BY "user_id" ORDER BY "user_id"
  LOOP
    PERFORM "usage_add"(r."user_id", 0, 0, 0, r.steps, r.bytes);
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE FUNCTION "usage_steps_updated"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN
    WITH per_execution AS (
      SELECT n."execution_id", sum(n."payload_bytes" - o."payload_bytes")::bigint AS bytes
        FROM new_rows n JOIN old_rows o ON o."id" = n."id"
       GROUP BY n."execution_id" HAVING sum(n."payload_bytes" - o."payload_bytes") <> 0
    ), totals AS (
      UPDATE "executions" e SET "step_payload_bytes" = e."step_payload_bytes" + p.bytes
        FROM per_execution p WHERE e."id" = p."execution_id"
      RETURNING e."user_id", p.bytes
    )
    SELECT "user_id", sum(bytes)::bigint AS bytes FROM totals GROUP BY "user_id" ORDER BY "user_id"
  LOOP
    PERFORM "usage_add"(r."user_id", 0, 0, 0, 0, r.bytes);
  END LOOP;
  RETURN NULL;
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
CREATE TRIGGER "usage_workflows_deleted" AFTER DELETE ON "workflows" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_jobs_deleted" AFTER DELETE ON "jobs" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_versions_deleted" AFTER DELETE ON "workflow_versions" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_executions_deleted" AFTER DELETE ON "executions" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_rows_deleted"();
--> statement-breakpoint
CREATE TRIGGER "usage_execution_changed" AFTER UPDATE ON "executions" FOR EACH ROW
  WHEN (OLD."payload_bytes" <> NEW."payload_bytes") EXECUTE FUNCTION "usage_execution_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_steps_inserted" AFTER INSERT ON "execution_steps" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_steps_inserted"();
--> statement-breakpoint
CREATE TRIGGER "usage_steps_updated" AFTER UPDATE ON "execution_steps" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_steps_updated"();
--> statement-breakpoint
-- What is already stored.
UPDATE "executions" e SET "step_count" = s.n, "step_payload_bytes" = s.bytes
  FROM (SELECT "execution_id", count(*)::int AS n, sum("payload_bytes") AS bytes FROM "execution_steps" GROUP BY "execution_id") s
 WHERE e."id" = s."execution_id";
--> statement-breakpoint
INSERT INTO "user_usage" ("user_id", "workflows", "jobs", "executions", "steps", "payload_bytes")
SELECT u."id",
       (SELECT count(*) FROM "workflows" w WHERE w."user_id" = u."id"),
       (SELECT count(*) FROM "jobs" j WHERE j."user_id" = u."id"),
       (SELECT count(*) FROM "executions" e WHERE e."user_id" = u."id"),
       (SELECT coalesce(sum("step_count"), 0) FROM "executions" e WHERE e."user_id" = u."id"),
       (SELECT coalesce(sum("payload_bytes"), 0) FROM "workflow_versions" v WHERE v."user_id" = u."id")
         + (SELECT coalesce(sum("payload_bytes" + "step_payload_bytes"), 0) FROM "executions" e WHERE e."user_id" = u."id")
  FROM "user" u;
