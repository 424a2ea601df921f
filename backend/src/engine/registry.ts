import { condition } from './nodes/condition.js';
import { delay } from './nodes/delay.js';
import { httpRequest } from './nodes/http.js';
import { transform } from './nodes/transform.js';
import { manualTrigger, scheduleTrigger, webhookTrigger } from './nodes/trigger.js';
import type { NodeDefinition } from './nodes/types.js';

/**
 * The node types the engine knows: graph validation refuses any other type and checks params
 * against these schemas; the runner executes through the same definitions. One module a type.
 */
export const nodeDefinitions = {
  'trigger.manual': manualTrigger,
  'trigger.schedule': scheduleTrigger,
  'trigger.webhook': webhookTrigger,
  'http.request': httpRequest,
  transform,
  condition,
  delay,
};

export type NodeType = keyof typeof nodeDefinitions;
export const nodeTypes = Object.keys(nodeDefinitions) as NodeType[];

export function isNodeType(type: string): type is NodeType {
  return Object.hasOwn(nodeDefinitions, type);
}

export function nodeDefinition(type: NodeType): NodeDefinition<unknown> {
  return nodeDefinitions[type] as NodeDefinition<unknown>;
}
