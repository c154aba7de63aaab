-- Whether a key may have the upstream use tools on its behalf (MCP servers from LM Studio's
-- mcp.json, plugins, remote MCP servers): off for inference keys, on for admin keys, which
-- could already do everything.
ALTER TABLE api_keys ADD COLUMN tools INTEGER NOT NULL DEFAULT 0 CHECK (tools IN (0, 1));
UPDATE api_keys SET tools = 1 WHERE scope = 'admin';
