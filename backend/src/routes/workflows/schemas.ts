import { z } from 'zod';
import { WorkflowEdges, WorkflowNodes } from '../../engine/graph.js';
import { Timestamp } from '../../lib/http.js';
import { listQuery, pageOf, searchableListQuery } from '../../lib/pagination.js';

export const Workflow = z
  .object({
    id: z.uuid(),
    name: z.string(),
    description: z.string(),
    nodes: WorkflowNodes,
    edges: WorkflowEdges,
    version: z.number().int(),
    webhook: z
      .object({
        url: z.string().meta({ description: 'POST here to start the workflow: anyone who knows it can' }),
        hookId: z.string(),
      })
      .nullable()
      .meta({ description: 'Its webhook while its graph has a trigger.webhook node, else null (POST /workflows/:id/webhook/rotate replaces it)' }),
    retentionDays: z
      .number()
      .int()
      .nullable()
      .meta({ description: 'Days its ended executions are kept after they finish; null: the server default (EXECUTION_RETENTION_DAYS)' }),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: 'Workflow' });

const name = z.string().trim().min(1).max(200);
const description = z.string().max(5_000);
/** Null: the server default. A change is saved like any other field's (a new version; it is not a graph change, but a PATCH saves the workflow whole). */
const retentionDays = z
  .number()
  .int()
  .min(1)
  .max(3_650)
  .nullable()
  .meta({ description: 'Days its ended executions are kept after they finish (1..3650); null: the server default (EXECUTION_RETENTION_DAYS)' });

export const CreateWorkflowBody = z
  .object({ name, description: description.default(''), nodes: WorkflowNodes, edges: WorkflowEdges.default([]), retentionDays: retentionDays.default(null) })
  .strict()
  .meta({ id: 'CreateWorkflow' });

export const UpdateWorkflowBody = z
  .object({
    name: name.optional(),
    description: description.optional(),
    nodes: WorkflowNodes.optional(),
    edges: WorkflowEdges.optional(),
    retentionDays: retentionDays.optional(),
  })
  .strict()
  .refine((body) => Object.values(body).some((value) => value !== undefined), { message: 'give at least one field to change' })
  .meta({ id: 'UpdateWorkflow' });

export const workflowSortFields = ['createdAt', 'updatedAt', 'name'] as const;
export const ListWorkflowsQuery = searchableListQuery(workflowSortFields, {});
export const WorkflowPage = pageOf(Workflow, 'WorkflowPage');

/** One saved version of a workflow's graph, as listed (the graph itself is read one at a time). */
export const WorkflowVersionSummary = z
  .object({
    version: z.number().int(),
    createdAt: Timestamp,
    payloadBytes: z.number().int().meta({ description: 'Bytes of the graph as JSON text (what it counts in GET /usage).' }),
  })
  .meta({ id: 'WorkflowVersionSummary' });
export const WorkflowVersion = z
  .object({ version: z.number().int(), nodes: WorkflowNodes, edges: WorkflowEdges, createdAt: Timestamp })
  .meta({ id: 'WorkflowVersion' });
export const ListWorkflowVersionsQuery = listQuery(['createdAt'] as const, {});
export const WorkflowVersionPage = pageOf(WorkflowVersionSummary, 'WorkflowVersionPage');
export const WorkflowVersionParams = z
  .object({ id: z.uuid({ message: 'must be a UUID' }), version: z.coerce.number().int().min(1).max(2_147_483_647) })
  .strict();

export type WorkflowDto = z.infer<typeof Workflow>;
export type WorkflowVersionSummaryDto = z.infer<typeof WorkflowVersionSummary>;
export type WorkflowVersionDto = z.infer<typeof WorkflowVersion>;
export type CreateWorkflowInput = z.infer<typeof CreateWorkflowBody>;
export type UpdateWorkflowInput = z.infer<typeof UpdateWorkflowBody>;
