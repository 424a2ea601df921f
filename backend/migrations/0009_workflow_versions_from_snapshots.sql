-- Each execution carried a copy of the graph it ran; from now on it refers to a workflow_versions
-- row instead. Every (workflow, version) that ran gets its row from the oldest execution's copy
-- (all copies of one version are the same graph), and every workflow's current version its own.
INSERT INTO "workflow_versions" ("workflow_id", "version", "user_id", "nodes", "edges", "created_at")
SELECT DISTINCT ON ("workflow_id", "workflow_version")
       "workflow_id", "workflow_version", "user_id", "workflow_snapshot"->'nodes', "workflow_snapshot"->'edges', "created_at"
  FROM "executions"
 ORDER BY "workflow_id", "workflow_version", "created_at";
--> statement-breakpoint
INSERT INTO "workflow_versions" ("workflow_id", "version", "user_id", "nodes", "edges", "created_at")
SELECT "id", "version", "user_id", "nodes", "edges", "updated_at" FROM "workflows"
ON CONFLICT ("workflow_id", "version") DO NOTHING;
