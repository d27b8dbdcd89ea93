"""XVA: the archive XenServer and XCP-ng export VMs in, and its HTTP handlers GET /export and
PUT /import (xapi's export.ml, import.ml, stream_vdi.ml).

A tar stream: `ova.xml` first (the VM's objects as one XML-RPC struct), then each disk's data as
1 MiB chunks `Ref:<n>/00000000`, ... each followed by its checksum member. The format modules are
sans-IO (tar, ovaxml, checksum, chunks); export and importer move the objects between the database and
ova.xml; disks, compression and HTTP are in handlers.
"""
