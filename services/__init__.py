"""The five returnflow services. None imports another; they share only contracts/ and returnflow/.
The one list of them is `apphost.registry.SERVICES`."""
