import { s3Backend, uniqueName } from '../support/swift-server.js';
import { backendConformance } from './conformance.js';

backendConformance({
  name: 's3 (Swift s3api)',
  make: (bucket) => s3Backend(bucket),
  paged: (bucket, pageSize) => s3Backend(bucket, { pageSize }),
  fresh: (label) => uniqueName(label),
});
