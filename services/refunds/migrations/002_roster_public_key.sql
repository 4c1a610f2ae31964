-- A command on refunds.commands proves its actor with an Ed25519 signature: the actor's public key
-- (standard base64 of the 32 raw bytes). An actor without one can decide over HTTP only.
ALTER TABLE roster ADD COLUMN public_key text;
