"""The network and its files: `SiameseReID`, weight files (safetensors + JSON), where ImageNet weights come from,
ports of other weights, bf16 where the CPU has it."""
