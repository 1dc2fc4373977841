"""Neural-collapse and plasticity metrics: pure, device-resident functions on torch tensors."""
