// Exists only to own the plugins precompiled header.
