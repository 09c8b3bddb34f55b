// VS Code client for `ksimdsl lsp`: starts the language server over stdio for .ksim files.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const config = vscode.workspace.getConfiguration("ksimdsl");
  const command = config.get("server.command", "ksimdsl");
  const args = config.get("server.args", ["lsp"]);
  return { command, args, transport: TransportKind.stdio };
}

async function activate(context) {
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "ksim" }, { scheme: "untitled", language: "ksim" }],
    synchronize: {
      // model files: the server re-checks the tasks that use a changed model
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.xml"),
    },
  };
  client = new LanguageClient("ksimdsl", "ksimdsl language server", serverOptions(), clientOptions);
  context.subscriptions.push(
    vscode.commands.registerCommand("ksimdsl.restartServer", async () => {
      if (client) {
        await client.restart();
      }
    })
  );
  await client.start();
}

async function deactivate() {
  if (client) {
    await client.stop();
  }
}

module.exports = { activate, deactivate };
