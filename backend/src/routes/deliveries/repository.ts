import { TextDecoder } from 'node:util';
import { and, eq, inArray } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { webhookDeliveries } from '../../db/schema/index.js';
import { iso } from '../../lib/http.js';
import { keysetPlan, toPage, type ColumnSortKey, type ListParams, type Page, type SortKeys } from '../../lib/pagination.js';
import { owns } from '../workflows/repository.js';
import type { BinaryBodyDto, DeliveryDetailDto, DeliveryDto } from './schemas.js';

type DeliveryStatus = (typeof webhookDeliveries.$inferSelect)['status'];

/**
 * What a list reads of a delivery: never its body, headers or query. A body may be a megabyte, so
 * a page of them reads only what it lists.
 */
const summaryColumns = {
  id: webhookDeliveries.id,
  workflowId: webhookDeliveries.workflowId,
  status: webhookDeliveries.status,
  executionId: webhookDeliveries.executionId,
  receivedAt: webhookDeliveries.receivedAt,
  contentType: webhookDeliveries.contentType,
  bodyBytes: webhookDeliveries.bodyBytes,
  reason: webhookDeliveries.reason,
};
type DeliverySummaryRow = Pick<typeof webhookDeliveries.$inferSelect, keyof typeof summaryColumns>;

const sortKeys: SortKeys<DeliverySummaryRow, ColumnSortKey<DeliverySummaryRow>> = {
  receivedAt: { column: webhookDeliveries.receivedAt, kind: 'timestamp', valueOf: (row) => row.receivedAt },
};

function present(row: DeliverySummaryRow): DeliveryDto {
  return {
    id: row.id,
    workflowId: row.workflowId,
    status: row.status,
    executionId: row.executionId,
    receivedAt: iso(row.receivedAt),
    contentType: row.contentType,
    bodyBytes: row.bodyBytes,
    reason: row.reason,
  };
}

// fatal: bytes that are not UTF-8 are told apart rather than replaced; ignoreBOM: a byte-order mark
// is part of the body as received and stays in the text.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The raw body as the API shows it: its text when it is valid UTF-8, else its bytes (API.md); null
 * for a rejected or duplicate delivery, which keeps no body (webhooks/repository.ts, insertDelivery).
 */
function presentBody(status: DeliveryStatus, body: Buffer, contentType: string | null): string | BinaryBodyDto | null {
  if (status !== 'accepted') return null;
  try {
    return utf8.decode(body);
  } catch {
    return { base64: body.toString('base64'), contentType: contentType ?? 'application/octet-stream' };
  }
}

/**
 * A page of the deliveries of one of the caller's workflows, newest first unless asked otherwise;
 * null when the caller has no such workflow (another user's is as missing). The index on
 * (workflow, receivedAt, id) serves every page and filter.
 */
export async function listForWorkflow(
  db: Db,
  userId: string,
  workflowId: string,
  params: ListParams & { status?: DeliveryStatus[] | undefined },
): Promise<Page<DeliveryDto> | null> {
  if (!(await owns(db, userId, workflowId))) return null;
  const plan = keysetPlan(params, sortKeys, webhookDeliveries.id);
  const rows = await db
    .select(summaryColumns)
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.userId, userId),
        eq(webhookDeliveries.workflowId, workflowId),
        params.status ? inArray(webhookDeliveries.status, params.status) : undefined,
        plan.after,
      ),
    )
    .orderBy(...plan.orderBy)
    .limit(plan.limit)
    .offset(plan.offset);
  return toPage(rows, params, sortKeys, present);
}

/** One of the caller's deliveries with its headers and body, or null (another user's is as missing). */
export async function get(db: Db, userId: string, id: string): Promise<DeliveryDetailDto | null> {
  const [row] = await db
    .select({ ...summaryColumns, headers: webhookDeliveries.headers, body: webhookDeliveries.body })
    .from(webhookDeliveries)
    .where(and(eq(webhookDeliveries.userId, userId), eq(webhookDeliveries.id, id)));
  if (!row) return null;
  return { ...present(row), headers: row.headers, body: presentBody(row.status, row.body, row.contentType) };
}
