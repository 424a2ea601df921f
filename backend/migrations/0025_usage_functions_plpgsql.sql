-- The usage triggers' upserts, in PL/pgSQL instead of SQL: PostgreSQL before 18 parses and plans a
-- SQL function's body on every call, and these run in every statement that ends a run (twice: the
-- execution's output, its steps). A PL/pgSQL function's plan is kept for the session. Same
-- signatures, same statements: what they count does not change.
CREATE OR REPLACE FUNCTION "usage_add"("owner" text, "workflows" int, "jobs" int, "executions" int, "steps" int, "payload_bytes" bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "user_usage" ("user_id", "workflows", "jobs", "executions", "steps", "payload_bytes")
  SELECT "owner", "usage_add"."workflows", "usage_add"."jobs", "usage_add"."executions", "usage_add"."steps", "usage_add"."payload_bytes"
   WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = "owner")
  ON CONFLICT ("user_id") DO UPDATE SET
    "workflows" = "user_usage"."workflows" + excluded."workflows",
    "jobs" = "user_usage"."jobs" + excluded."jobs",
    "executions" = "user_usage"."executions" + excluded."executions",
    "steps" = "user_usage"."steps" + excluded."steps",
    "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
END $$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION "usage_add_settings"("owner" text, "connections" int, "variables" int, "payload_bytes" bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "user_usage" ("user_id", "connections", "variables", "payload_bytes")
  SELECT "owner", "usage_add_settings"."connections", "usage_add_settings"."variables", "usage_add_settings"."payload_bytes"
   WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = "owner")
  ON CONFLICT ("user_id") DO UPDATE SET
    "connections" = "user_usage"."connections" + excluded."connections",
    "variables" = "user_usage"."variables" + excluded."variables",
    "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
END $$;
