// `gatewire serve bench/apps/shapes-fetch.ts`: every Fetch shape of shapes.ts.
import { fetchApp } from './shapes.ts';

export default fetchApp;
