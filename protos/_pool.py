"""The descriptor pool that splitinfer's generated protobuf modules register in."""
from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
