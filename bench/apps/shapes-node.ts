// `gatewire serve bench/apps/shapes-node.ts`: every Node-listener shape of shapes.ts (Express included).
import { nodeApp } from './shapes.ts';

export default nodeApp;
