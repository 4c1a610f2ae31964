-- Who revoked a customer link (a person's action is attributed): the reader's name from their token.
ALTER TABLE returns ADD COLUMN link_revoked_by text;
