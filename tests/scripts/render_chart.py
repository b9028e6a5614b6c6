#!/usr/bin/env python3
"""Lint and render the bedside chart with the Helm 4 engine (helm-python-sdk).

  render_chart.py CHART [--values JSON] [--namespace NS] [--lint]

Prints one YAML stream: the chart's CRDs, then every rendered template (sorted by path, empty
ones left out). `--lint` lints first and fails on any lint error. Exits 1 with Helm's message
when the values break values.schema.json or a template fails. deploy/bedside.yaml is this
script's output for the default values (`make manifests`).
"""

import argparse
import json
import sys

import helm_python


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("--values", default="{}")
    parser.add_argument("--namespace", default="bedside-system")
    parser.add_argument("--lint", action="store_true")
    args = parser.parse_args()
    values = json.loads(args.values)

    if args.lint:
        report = helm_python.lint(args.chart, values, strict=True, namespace=args.namespace)
        errors = report.get("errors") or []
        serious = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 3]
        if errors or serious:
            print(json.dumps({"errors": errors, "messages": serious}, indent=2), file=sys.stderr)
            sys.exit(1)

    try:
        chart = helm_python.Chart.load(args.chart)
        rendered = chart.render(values, name="bedside", namespace=args.namespace, is_install=True)
    except helm_python.HelmError as error:
        print(f"helm: {error}", file=sys.stderr)
        sys.exit(1)

    documents = []
    for crd in sorted(chart.crds, key=lambda c: c["filename"]):
        data = crd["data"]
        documents.append(data if isinstance(data, str) else bytes(data).decode())
    for path in sorted(rendered):
        text = rendered[path]
        for document in text.split("\n---"):
            if document.strip() and any(
                line.strip() and not line.lstrip().startswith("#") for line in document.splitlines()
            ):
                documents.append(f"# Source: {path}\n{document.strip()}\n")
    sys.stdout.write("---\n".join(d if d.endswith("\n") else d + "\n" for d in documents))


if __name__ == "__main__":
    main()
