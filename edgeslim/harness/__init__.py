"""The host side of running models on devices: emulated Cortex-M boards (qemu), serial links."""
