-- The model injected into embeddings requests that name none: the active (chat) model is no
-- embedding model, so it cannot serve them. NULL: the one loaded embedding model, if exactly
-- one is loaded, else none.
ALTER TABLE active_model ADD COLUMN embedding_model TEXT;
