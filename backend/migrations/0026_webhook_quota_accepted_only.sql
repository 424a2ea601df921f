-- Only an accepted delivery's bytes count towards its owner's stored bytes (and so the storage
-- quota). A rejected or duplicate delivery starts nothing and keeps no body, but its headers and
-- query (up to Node's 16 KiB header limit) counted: anyone who knows a hook URL could fill its
-- owner's quota with forged or repeated requests. Such rows still count as deliveries.
CREATE OR REPLACE FUNCTION "usage_deliveries_changed"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN EXECUTE format(
    'SELECT "user_id", sum(n)::int AS n, sum(bytes)::bigint AS bytes FROM (%s) changes GROUP BY "user_id" ORDER BY "user_id"',
    CASE TG_OP
      WHEN 'INSERT' THEN 'SELECT "user_id", 1 AS n, CASE WHEN "status" = ''accepted'' THEN "payload_bytes" ELSE 0 END AS bytes FROM new_rows'
      ELSE 'SELECT "user_id", -1 AS n, CASE WHEN "status" = ''accepted'' THEN -"payload_bytes" ELSE 0 END AS bytes FROM old_rows'
    END)
  LOOP
    INSERT INTO "user_usage" ("user_id", "webhook_deliveries", "payload_bytes")
    SELECT r."user_id", r.n, r.bytes
     WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = r."user_id")
    ON CONFLICT ("user_id") DO UPDATE SET
      "webhook_deliveries" = "user_usage"."webhook_deliveries" + excluded."webhook_deliveries",
      "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
-- What the stored rejected and duplicate deliveries added is taken back.
UPDATE "user_usage" u SET "payload_bytes" = u."payload_bytes" - s.bytes
  FROM (SELECT "user_id", sum("payload_bytes")::bigint AS bytes FROM "webhook_deliveries" WHERE "status" <> 'accepted' GROUP BY "user_id") s
 WHERE u."user_id" = s."user_id";
