"""Test plugins with EMULATOR routes (see each module)."""
