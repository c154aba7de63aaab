-- Output tokens lmgate counted itself from the frames it relayed, because the upstream
-- reported no usage (a stream cancelled or cut off before its usage chunk). Part of tokens_out.
ALTER TABLE usage_minutes ADD COLUMN tokens_out_estimated INTEGER NOT NULL DEFAULT 0;
