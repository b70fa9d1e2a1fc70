"""The Officium server: a register of offices, folders, documents and versions, with
a hash-chained audit trail. Domain services own the rules; routers stay thin."""
