"""Simulation stage: QEMU command line, cycle plugin, trace parsing and metrics.

Public API: ``run_firmware`` / ``SimResult`` (qemu), ``parse_plugin_output``,
``build_trace``, ``compute_metrics`` (trace), ``format_cycles_txt`` (cycles_txt),
event ids in ``events``. A run's events are an ``EventTable`` (eventtable: numpy columns);
the plugin file is read by plugin_file, measured by metrics, written by trace_json.
"""
