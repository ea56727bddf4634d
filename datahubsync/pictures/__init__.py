"""Pictures: task sources, transfers and the ledger (client); file serving and the legacy TCP
protocol (server side of ``serve``)."""
