"""The xe commands of TLS trust and of the pool database's copies (cli_frontend.ml / cli_operations.ml):
pool CA certificates and CRLs (files read on the client through the CLI protocol's Load, named by their
base name), TLS verification, a host's server certificate, the redo-log and SR database replication."""
from __future__ import annotations

import os

from xapi.cli.cmdtable import HOST_SELECTORS, command
from xapi.cli.commands import ExitWithError
from xapi.cli.ops_host import each_host

MAX_PEM = 1 << 20           # a certificate, key, chain or CRL is a few KiB


async def _client_file(run, name: str, desc: str) -> str:
    """The client's file as text; "Failed to read <desc>" and exit 1 when it can't be read (as
    cli_operations' get_file_or_fail)."""
    data = None if run.channel is None else await run.channel.load(name, MAX_PEM)
    if data is None:
        await run.out("stderr", f"Failed to read {desc}\n")
        raise ExitWithError(1)
    return data.decode("utf-8", "replace")


# -- pool CA certificates and CRLs -----------------------------------------------------------------
async def _install_ca(run) -> None:
    filename = run.args["filename"]
    cert = await _client_file(run, filename, "certificate")
    await run.call("pool.install_ca_certificate", os.path.basename(filename), cert)


@command("pool-install-ca-certificate", reqd=("filename",), help="Install a TLS CA certificate, pool-wide.")
async def pool_install_ca_certificate(run) -> None:
    await _install_ca(run)


@command("pool-certificate-install", reqd=("filename",),
         help="Install a TLS CA certificate, pool-wide (deprecated: use pool-install-ca-certificate).")
async def pool_certificate_install(run) -> None:
    await _install_ca(run)


@command("pool-uninstall-ca-certificate", reqd=("name",), help="Uninstall a pool-wide TLS CA certificate.")
async def pool_uninstall_ca_certificate(run) -> None:
    await run.call("pool.uninstall_ca_certificate", run.args["name"])


@command("pool-certificate-uninstall", reqd=("name",),
         help="Uninstall a pool-wide TLS CA certificate (deprecated: use pool-uninstall-ca-certificate).")
async def pool_certificate_uninstall(run) -> None:
    await run.call("pool.uninstall_ca_certificate", run.args["name"])


@command("pool-certificate-list", help="List the names of all installed TLS CA certificates.")
async def pool_certificate_list(run) -> None:
    await run.print_list(await run.call("pool.certificate_list"))


@command("pool-crl-install", reqd=("filename",),
         help="Install a TLS CA-issued Certificate Revocation List, pool-wide.")
async def pool_crl_install(run) -> None:
    filename = run.args["filename"]
    crl = await _client_file(run, filename, "CRL")
    await run.call("pool.crl_install", os.path.basename(filename), crl)


@command("pool-crl-uninstall", reqd=("name",), help="Uninstall a pool-wide TLS CA-issued Certificate Revocation List.")
async def pool_crl_uninstall(run) -> None:
    await run.call("pool.crl_uninstall", run.args["name"])


@command("pool-crl-list", help="List the names of all installed TLS CA-issued Certificate Revocation Lists.")
async def pool_crl_list(run) -> None:
    await run.print_list(await run.call("pool.crl_list"))


@command("pool-certificate-sync", help="Copy the TLS CA certificates and CRLs of the master to all slaves.")
async def pool_certificate_sync(run) -> None:
    await run.call("pool.certificate_sync")


@command("pool-enable-tls-verification", help="Enable TLS certificate verification")
async def pool_enable_tls_verification(run) -> None:
    await run.call("pool.enable_tls_verification")


# -- a host's server certificate and its emergency switches ----------------------------------------
@command("host-server-certificate-install", reqd=("certificate", "private-key"),
         optn=("certificate-chain", HOST_SELECTORS), help="Install a server TLS certificate on a host")
async def host_server_certificate_install(run) -> None:
    cert = await _client_file(run, run.args["certificate"], "certificate")
    key = await _client_file(run, run.args["private-key"], "private key")
    chain = ""
    if run.args.get("certificate-chain"):
        chain = await _client_file(run, run.args["certificate-chain"], "certificate chain")
    own = ("certificate", "private-key", "certificate-chain")
    await each_host(run, own, lambda h: run.call("host.install_server_certificate", h, cert, key, chain))


@command("host-refresh-server-certificate", optn=(HOST_SELECTORS,),
         help="Replace the TLS server certificate of the host with a new, self-signed one.")
async def host_refresh_server_certificate(run) -> None:
    await each_host(run, (), lambda h: run.call("host.refresh_server_certificate", h))


@command("host-reset-server-certificate", optn=(HOST_SELECTORS,),
         help="Deletes the current TLS server certificate in the host and installs a new, self-signed one.")
async def host_reset_server_certificate(run) -> None:
    await each_host(run, (), lambda h: run.call("host.reset_server_certificate", h))


@command("host-emergency-reset-server-certificate",
         help="Deletes the current TLS server certificate in the host and installs a new, self-signed one.")
async def host_emergency_reset_server_certificate(run) -> None:
    await run.call("host.emergency_reset_server_certificate")


@command("host-emergency-disable-tls-verification", help="Disable TLS verification for this host only.")
async def host_emergency_disable_tls_verification(run) -> None:
    await run.call("host.emergency_disable_tls_verification")


@command("host-emergency-reenable-tls-verification",
         help="Reenable TLS verification for this host only, and only after it was emergency disabled.")
async def host_emergency_reenable_tls_verification(run) -> None:
    await run.call("host.emergency_reenable_tls_verification")


# -- the redo-log and database replication ---------------------------------------------------------
@command("pool-enable-redo-log", reqd=("sr-uuid",),
         help="Enable the redo log on the given SR and start using it, unless HA is enabled.")
async def pool_enable_redo_log(run) -> None:
    sr = await run.call("SR.get_by_uuid", run.args["sr-uuid"])
    await run.call("pool.enable_redo_log", sr)


@command("pool-disable-redo-log", help="Disable the redo log if in use, unless HA is enabled.")
async def pool_disable_redo_log(run) -> None:
    await run.call("pool.disable_redo_log")


@command("sr-enable-database-replication", reqd=("uuid",), help="Enable database replication to the SR.")
async def sr_enable_database_replication(run) -> None:
    sr = await run.call("SR.get_by_uuid", run.args["uuid"])
    await run.call("SR.enable_database_replication", sr)


@command("sr-disable-database-replication", reqd=("uuid",), help="Disable database replication to the SR.")
async def sr_disable_database_replication(run) -> None:
    sr = await run.call("SR.get_by_uuid", run.args["uuid"])
    await run.call("SR.disable_database_replication", sr)
