#compdef nnkit

_nnkit_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _NNKIT_COMPLETE=complete_zsh nnkit)
}

compdef _nnkit_completion nnkit
